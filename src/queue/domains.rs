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
    /// Called on every insert into the schedule: a set and names already
    /// interned cost no allocation but the small list of names.
    pub fn acquire_for(&mut self, envelope: &Envelope) -> SetId {
        let mut names: Vec<Arc<str>> = envelope
            .recipients
            .iter()
            .filter(|recipient| !recipient.status.is_final())
            .map(|recipient| {
                let domain = recipient
                    .address
                    .rsplit_once('@')
                    .map_or("", |(_, domain)| domain);
                if domain.bytes().any(|byte| byte.is_ascii_uppercase()) {
                    self.name(&domain.to_ascii_lowercase())
                } else {
                    self.name(domain)
                }
            })
            .collect();
        names.sort_unstable();
        names.dedup();
        self.acquire_names(names)
    }

    /// Takes a reference to the set of `domains` (sorted, distinct).
    pub fn acquire(&mut self, domains: Vec<String>) -> SetId {
        let names = domains.iter().map(|domain| self.name(domain)).collect();
        self.acquire_names(names)
    }

    /// Takes a reference to the set of `names` (sorted, distinct).
    fn acquire_names(&mut self, names: Vec<Arc<str>>) -> SetId {
        if names.is_empty() {
            return Self::EMPTY;
        }
        if let Some(&id) = self.by_domains.get(names.as_slice()) {
            self.slots[id as usize].count += 1;
            return id;
        }
        let key: Arc<[Arc<str>]> = names.into();
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
    fn name(&self, domain: &str) -> Arc<str> {
        match self.names.get_key_value(domain) {
            Some((name, _)) => name.clone(),
            None => domain.into(),
        }
    }
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
    fn an_envelope_shares_the_set_of_its_open_recipients_domains() {
        use crate::queue::Lane;
        use crate::queue::envelope::{Recipient, RecipientStatus};
        let mut sets = DomainSets::default();
        let mut recipients: Vec<Recipient> = ["a@B.org", "c@a.org", "d@b.org", "e@gone.org"]
            .into_iter()
            .map(|address| Recipient::new(address.to_owned()))
            .collect();
        recipients[3].status = RecipientStatus::Delivered;
        let envelope = Envelope::new(
            String::new(),
            recipients,
            Lane::High,
            std::time::SystemTime::UNIX_EPOCH,
            1,
        );
        let from_envelope = sets.acquire_for(&envelope);
        let listed = sets.acquire(set(&["a.org", "b.org"]));
        assert_eq!(from_envelope, listed);
        let names: Vec<&str> = sets.domains(listed).iter().map(|name| &**name).collect();
        assert_eq!(names, ["a.org", "b.org"]);
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
