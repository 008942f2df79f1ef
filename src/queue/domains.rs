//! The recipient domains of queued messages, kept in the schedule so that
//! `queue list --domain`, `queue stats` and bulk operations by domain never
//! read an envelope. A message holds one small number: the id of its set of
//! open-recipient domains. Sets are interned with a reference count, so a
//! million messages to a handful of domains cost a handful of strings.

use std::collections::HashMap;
use std::sync::Arc;

use super::Envelope;

/// The id of a set of domains; [`DomainSets::EMPTY`] for none.
pub type SetId = u32;

#[derive(Debug, Default)]
struct Slot {
    /// The sorted, distinct domains; empty for a free slot.
    domains: Arc<[Arc<str>]>,
    count: u32,
}

/// Interned domain sets with reference counts.
#[derive(Debug)]
pub struct DomainSets {
    slots: Vec<Slot>,
    by_domains: HashMap<Arc<[Arc<str>]>, SetId>,
    /// Interned domain names, shared by every set that holds them.
    names: HashMap<Arc<str>, u32>,
    free: Vec<SetId>,
}

impl Default for DomainSets {
    fn default() -> Self {
        DomainSets {
            // Slot 0 is the empty set, never freed.
            slots: vec![Slot::default()],
            by_domains: HashMap::new(),
            names: HashMap::new(),
            free: Vec::new(),
        }
    }
}

impl DomainSets {
    pub const EMPTY: SetId = 0;

    /// Takes a reference to the set of `envelope`'s open-recipient domains.
    pub fn acquire_for(&mut self, envelope: &Envelope) -> SetId {
        let mut domains: Vec<String> = envelope
            .recipients
            .iter()
            .filter(|recipient| !recipient.status.is_final())
            .map(|recipient| domain_of(&recipient.address))
            .collect();
        domains.sort_unstable();
        domains.dedup();
        self.acquire(domains)
    }

    /// Takes a reference to the set of `domains` (sorted, distinct).
    pub fn acquire(&mut self, domains: Vec<String>) -> SetId {
        if domains.is_empty() {
            return Self::EMPTY;
        }
        let key: Arc<[Arc<str>]> = domains.into_iter().map(|d| self.name(d)).collect();
        if let Some(&id) = self.by_domains.get(&key) {
            self.slots[id as usize].count += 1;
            return id;
        }
        // A new set: each of its names gains a user.
        for name in key.iter() {
            *self.names.entry(name.clone()).or_insert(0) += 1;
        }
        let slot = Slot {
            domains: key.clone(),
            count: 1,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.slots[id as usize] = slot;
                id
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as SetId
            }
        };
        self.by_domains.insert(key, id);
        id
    }

    /// Takes another reference to `id`.
    pub fn retain(&mut self, id: SetId) {
        if id != Self::EMPTY
            && let Some(slot) = self.slots.get_mut(id as usize)
        {
            slot.count += 1;
        }
    }

    /// Drops a reference; the last one frees the set and unused names.
    pub fn release(&mut self, id: SetId) {
        if id == Self::EMPTY {
            return;
        }
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        slot.count = slot.count.saturating_sub(1);
        if slot.count > 0 {
            return;
        }
        let domains = std::mem::take(&mut slot.domains);
        self.by_domains.remove(&domains);
        for name in domains.iter() {
            if let Some(uses) = self.names.get_mut(name) {
                *uses -= 1;
                if *uses == 0 {
                    self.names.remove(name);
                }
            }
        }
        self.free.push(id);
    }

    /// The domains of set `id`.
    pub fn domains(&self, id: SetId) -> &[Arc<str>] {
        self.slots
            .get(id as usize)
            .map(|slot| &slot.domains[..])
            .unwrap_or_default()
    }

    /// Whether set `id` holds `domain` (lower case).
    pub fn contains(&self, id: SetId, domain: &str) -> bool {
        self.domains(id).iter().any(|name| &**name == domain)
    }

    /// Sets in use.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.by_domains.len()
    }

    /// The interned name for `domain`, or a new one (interned by the
    /// caller once a set holds it).
    fn name(&self, domain: String) -> Arc<str> {
        match self.names.get_key_value(domain.as_str()) {
            Some((name, _)) => name.clone(),
            None => domain.into(),
        }
    }
}

/// The lower-cased domain of an address (empty when it has none).
pub fn domain_of(address: &str) -> String {
    address
        .rsplit_once('@')
        .map(|(_, domain)| domain.to_ascii_lowercase())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(domains: &[&str]) -> Vec<String> {
        domains.iter().map(|d| (*d).to_owned()).collect()
    }

    #[test]
    fn equal_sets_share_one_id_until_the_last_release() {
        let mut sets = DomainSets::default();
        let a = sets.acquire(set(&["a.org", "b.org"]));
        let b = sets.acquire(set(&["a.org", "b.org"]));
        let c = sets.acquire(set(&["a.org"]));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(sets.contains(a, "b.org") && !sets.contains(c, "b.org"));
        assert_eq!(sets.in_use(), 2);
        sets.release(a);
        assert!(sets.contains(b, "a.org"), "still referenced");
        sets.release(b);
        assert_eq!(sets.in_use(), 1);
        assert!(sets.domains(a).is_empty());
        assert_eq!(sets.names.len(), 1, "b.org is no longer held");
        // The freed slot is reused.
        let d = sets.acquire(set(&["c.org"]));
        assert_eq!(d, a);
        assert_eq!(sets.acquire(Vec::new()), DomainSets::EMPTY);
        sets.release(DomainSets::EMPTY);
        assert!(sets.domains(DomainSets::EMPTY).is_empty());
    }

    #[test]
    fn retain_adds_a_reference() {
        let mut sets = DomainSets::default();
        let a = sets.acquire(set(&["a.org"]));
        sets.retain(a);
        sets.release(a);
        assert!(sets.contains(a, "a.org"));
        sets.release(a);
        assert!(!sets.contains(a, "a.org"));
    }
}
