//! TEMPORARY until the bounce classifier is merged: the one-byte code of a
//! class name in the set, assigned as names appear. Replaced by
//! `BounceClass::index`.

use std::sync::RwLock;

#[derive(Default)]
pub struct ClassCodes {
    names: RwLock<Vec<&'static str>>,
}

impl ClassCodes {
    pub fn code(&self, name: &str) -> u8 {
        if let Some(code) = self.find(name) {
            return code;
        }
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        if let Some(code) = names.iter().position(|known| *known == name) {
            return code as u8;
        }
        if names.len() >= usize::from(u8::MAX) {
            return u8::MAX;
        }
        names.push(Box::leak(name.to_owned().into_boxed_str()));
        (names.len() - 1) as u8
    }

    fn find(&self, name: &str) -> Option<u8> {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        names
            .iter()
            .position(|known| *known == name)
            .map(|code| code as u8)
    }

    pub fn name(&self, code: u8) -> &'static str {
        let names = self.names.read().unwrap_or_else(|p| p.into_inner());
        names
            .get(usize::from(code))
            .copied()
            .unwrap_or("unclassified")
    }
}

pub fn check(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte == b'_')
    {
        Ok(())
    } else {
        Err(format!("unknown bounce class {name:?}"))
    }
}
