//! The hosts' shared cache of validated phone numbers on a Redis store
//! (`P n:<cache key>`, kept [`NUMBER_TTL_S`] seconds), in front of which a
//! server's handles share [`crate::phone::MemoryNumbers`].

use super::{RedisStore, NUMBER_TTL_S};
use crate::phone::NumberCache;

/// The hosts' shared cache of validated numbers: memory first, then the
/// server. A failing cache is only slower, never wrong: errors are
/// ignored (and a broken connection is reopened by the next call), and
/// for a few seconds after the server did not answer it is not asked
/// (a login on a store that is down waits for its timeouts once).
impl NumberCache for RedisStore {
    fn get(&self, key: &str) -> Option<(String, Option<String>)> {
        if let Some(found) = self.numbers.get(key) {
            return Some(found);
        }
        if self.recently_unreachable() {
            return None;
        }
        let text: String = self
            .run(|c| {
                redis::cmd("GET")
                    .arg(self.number_key(key))
                    .query::<Option<String>>(c)
            })
            .ok()
            .flatten()?;
        let (e164, region) = match text.split_once(' ') {
            Some((e164, region)) => (e164.to_owned(), Some(region.to_owned())),
            None => (text, None),
        };
        // Only what this smsotp writes: "+" and digits.
        let digits = e164.strip_prefix('+')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        self.numbers.put(key, &e164, region.as_deref());
        Some((e164, region))
    }
    fn put(&self, key: &str, e164: &str, region: Option<&str>) {
        self.numbers.put(key, e164, region);
        if self.recently_unreachable() {
            return;
        }
        let value = match region {
            Some(r) => format!("{e164} {r}"),
            None => e164.to_owned(),
        };
        let _ = self.run(|c| {
            redis::cmd("SET")
                .arg(self.number_key(key))
                .arg(&value)
                .arg("EX")
                .arg(NUMBER_TTL_S)
                .query::<()>(c)
        });
    }
}
