//! The signed zones of the test DNS server: their keys, records, NSEC
//! chains and signatures, made once when the server starts, and the answer
//! to one query as a validating resolver's upstream would give it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use hickory_server::proto::dnssec::crypto::EcdsaSigningKey;
use hickory_server::proto::dnssec::rdata::{DNSKEY, DNSSECRData, DS, NSEC, RRSIG};
use hickory_server::proto::dnssec::{Algorithm, DigestType, DnssecSigner, SigningKey as _};
use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{NS, SOA};
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};

/// TTL of every record, and the SOA minimum.
const TTL: u32 = 300;

/// How a zone is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// Signed, with a DS record in its parent.
    Signed,
    /// Not signed, and no DS in its parent: an insecure delegation.
    Unsigned,
    /// Signed and delegated with a DS, but every signature over its data
    /// is corrupt: answers from it are bogus.
    Bogus,
}

/// One zone: its origin, how it is signed, its records by owner and type.
pub(super) struct Zone {
    pub origin: Name,
    pub security: Security,
    pub rrsets: BTreeMap<(Name, RecordType), RecordSet>,
    signer: Option<DnssecSigner>,
}

impl Zone {
    pub fn new(origin: Name, security: Security) -> Zone {
        let signer = (security != Security::Unsigned).then(|| {
            let pkcs8 = EcdsaSigningKey::generate_pkcs8(Algorithm::ECDSAP256SHA256).unwrap();
            let key = EcdsaSigningKey::from_pkcs8(&pkcs8, Algorithm::ECDSAP256SHA256).unwrap();
            let dnskey = DNSKEY::new(true, true, false, key.to_public_key().unwrap());
            DnssecSigner::new(
                dnskey,
                Box::new(key),
                origin.clone(),
                Duration::from_secs(7 * 24 * 3600),
            )
        });
        let mut zone = Zone {
            origin: origin.clone(),
            security,
            rrsets: BTreeMap::new(),
            signer,
        };
        let ns = Name::from_ascii("ns.test.").unwrap();
        let soa = SOA::new(
            ns.clone(),
            Name::from_ascii("hostmaster.test.").unwrap(),
            1,
            3600,
            600,
            86400,
            TTL,
        );
        zone.add(origin.clone(), RData::SOA(soa));
        zone.add(origin.clone(), RData::NS(NS(ns)));
        if let Some(signer) = &zone.signer {
            let dnskey = signer.to_dnskey();
            zone.add(origin, RData::DNSSEC(DNSSECRData::DNSKEY(dnskey)));
        }
        zone
    }

    pub fn add(&mut self, name: Name, data: RData) {
        let record_type = data.record_type();
        self.rrsets
            .entry((name.clone(), record_type))
            .or_insert_with(|| RecordSet::with_ttl(name, record_type, TTL))
            .add_rdata(data);
    }

    /// The DNSKEY of a signed zone.
    pub fn dnskey(&self) -> Option<DNSKEY> {
        self.signer.as_ref().map(DnssecSigner::to_dnskey)
    }

    /// The DS record its parent publishes for a signed zone.
    pub fn ds(&self) -> Option<DS> {
        let key = self.dnskey()?;
        let digest = key.to_digest(&self.origin, DigestType::SHA256).unwrap();
        Some(DS::new(
            key.calculate_key_tag().unwrap(),
            Algorithm::ECDSAP256SHA256,
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        ))
    }

    /// Adds the NSEC chain and signs every authoritative RRset (not the NS
    /// of a delegation). A bogus zone's data signatures are then spoiled.
    pub fn sign(&mut self) {
        let Some(signer) = self.signer.take() else {
            return;
        };
        let owners: BTreeSet<Name> = self.rrsets.keys().map(|(name, _)| name.clone()).collect();
        let owners: Vec<Name> = owners.into_iter().collect();
        for (index, owner) in owners.iter().enumerate() {
            let next = owners.get(index + 1).unwrap_or(&owners[0]).clone();
            let mut types: Vec<RecordType> = self
                .rrsets
                .keys()
                .filter(|(name, _)| name == owner)
                .map(|(_, record_type)| *record_type)
                .collect();
            types.extend([RecordType::RRSIG, RecordType::NSEC]);
            let nsec = NSEC::new(next, types);
            self.add(owner.clone(), RData::DNSSEC(DNSSECRData::NSEC(nsec)));
        }
        let inception = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
        let origin = self.origin.clone();
        for ((name, record_type), rrset) in self.rrsets.iter_mut() {
            let delegation = *record_type == RecordType::NS && *name != origin;
            if delegation {
                continue;
            }
            let rrsig = RRSIG::from_rrset(rrset, DNSClass::IN, inception, &signer).unwrap();
            let rrsig = if self.security == Security::Bogus && *record_type != RecordType::DNSKEY {
                let mut signature = rrsig.sig().to_vec();
                signature[0] ^= 0xff;
                RRSIG::from_sig(rrsig.input().clone(), signature)
            } else {
                rrsig
            };
            rrset.insert_rrsig(Record::from_rdata(
                name.clone(),
                TTL,
                RData::DNSSEC(DNSSECRData::RRSIG(rrsig)),
            ));
        }
        self.signer = Some(signer);
    }

    /// The answer to `name` `record_type` from this zone.
    pub fn answer(&self, name: &Name, record_type: RecordType) -> Reply {
        if let Some(rrset) = self.rrsets.get(&(name.clone(), record_type)) {
            return Reply::records(ResponseCode::NoError, with_signatures(rrset), Vec::new());
        }
        if let Some(rrset) = self.rrsets.get(&(name.clone(), RecordType::CNAME)) {
            return Reply::records(ResponseCode::NoError, with_signatures(rrset), Vec::new());
        }
        let mut authority = self.soa();
        let exists = self.rrsets.keys().any(|(owner, _)| owner == name);
        if exists {
            authority.extend(self.nsec_at(name));
            return Reply::records(ResponseCode::NoError, Vec::new(), authority);
        }
        let below = self
            .rrsets
            .keys()
            .any(|(owner, _)| owner != name && name.zone_of(owner));
        authority.extend(self.nsec_covering(name));
        if below {
            // An empty non-terminal: it exists, with no records.
            return Reply::records(ResponseCode::NoError, Vec::new(), authority);
        }
        let encloser = self.closest_encloser(name);
        if let Ok(wildcard) = encloser.prepend_label("*") {
            for record in self.nsec_covering(&wildcard) {
                if !authority.contains(&record) {
                    authority.push(record);
                }
            }
        }
        Reply::records(ResponseCode::NXDomain, Vec::new(), authority)
    }

    fn soa(&self) -> Vec<Record> {
        self.rrsets
            .get(&(self.origin.clone(), RecordType::SOA))
            .map(with_signatures)
            .unwrap_or_default()
    }

    fn nsec_at(&self, name: &Name) -> Vec<Record> {
        self.rrsets
            .get(&(name.clone(), RecordType::NSEC))
            .map(with_signatures)
            .unwrap_or_default()
    }

    /// The NSEC whose owner comes last before `name` in canonical order.
    fn nsec_covering(&self, name: &Name) -> Vec<Record> {
        let before = self
            .rrsets
            .keys()
            .filter(|(owner, record_type)| *record_type == RecordType::NSEC && owner < name)
            .map(|(owner, _)| owner.clone())
            .next_back()
            .or_else(|| {
                self.rrsets
                    .keys()
                    .filter(|(_, record_type)| *record_type == RecordType::NSEC)
                    .map(|(owner, _)| owner.clone())
                    .next_back()
            });
        before.map(|owner| self.nsec_at(&owner)).unwrap_or_default()
    }

    /// The longest ancestor of `name` that exists in the zone (as an owner
    /// or an empty non-terminal).
    fn closest_encloser(&self, name: &Name) -> Name {
        let mut candidate = name.base_name();
        while candidate.num_labels() > self.origin.num_labels() {
            if self
                .rrsets
                .keys()
                .any(|(owner, _)| candidate.zone_of(owner))
            {
                return candidate;
            }
            candidate = candidate.base_name();
        }
        self.origin.clone()
    }
}

fn with_signatures(rrset: &RecordSet) -> Vec<Record> {
    rrset.records_with_rrsigs().cloned().collect()
}

/// One answer before it is encoded.
pub(super) struct Reply {
    pub code: ResponseCode,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
}

impl Reply {
    pub fn records(code: ResponseCode, answers: Vec<Record>, authority: Vec<Record>) -> Reply {
        Reply {
            code,
            answers,
            authority,
        }
    }

    pub fn servfail() -> Reply {
        Reply::records(ResponseCode::ServFail, Vec::new(), Vec::new())
    }
}
