//! Which chunks a `validate --read-data-subset` reads (restic's `check --read-data-subset`): a
//! rotating share (`n/t`: chunk ids fall into `t` groups by their first bytes, so running `1/t`
//! .. `t/t` on successive nights reads every chunk once per cycle), a random fraction (`N%`),
//! or a random share of about a given size (`SIZE`, e.g. `500M`). The chunks left out are
//! still looked up (a missing chunk is found whatever the subset); only their reading waits.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;

use super::ChunkId;

/// A part of the chunks, as the user asked for it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Subset {
    /// Group `n` of `t` (1-based).
    Group { n: u32, t: u32 },
    /// A random `percent` of the chunks, in (0, 100].
    Percent(f64),
    /// A random share whose content adds up to about this many bytes.
    Size(u64),
}

impl fmt::Display for Subset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subset::Group { n, t } => write!(f, "{n}/{t}"),
            Subset::Percent(p) => write!(f, "{p}%"),
            Subset::Size(bytes) => write!(f, "{bytes} bytes"),
        }
    }
}

impl FromStr for Subset {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let refused = |why: &str| {
            Err(format!(
                "`{text}` is not a subset: {why} (`n/t` such as `2/7`, `N%` such as `10%`, or a size such as `500M`)"
            ))
        };
        if let Some((n, t)) = text.split_once('/') {
            let (Ok(n), Ok(t)) = (n.parse::<u32>(), t.parse::<u32>()) else {
                return refused("n and t must be whole numbers");
            };
            if t == 0 || n == 0 || n > t {
                return refused("n must be from 1 to t");
            }
            return Ok(Subset::Group { n, t });
        }
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Subset::Percent(p)),
                _ => refused("the percentage must be more than 0 and at most 100"),
            };
        }
        match crate::size::parse(text) {
            Ok(bytes) if bytes > 0 => Ok(Subset::Size(bytes)),
            Ok(_) | Err(crate::size::NOT_A_NUMBER) => {
                refused("the size must be a whole number above 0")
            }
            Err(why) => refused(why),
        }
    }
}

/// A subset made concrete for one run: which chunk ids it reads.
#[derive(Clone, Debug)]
pub struct Selection {
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    Group {
        n: u32,
        t: u32,
    },
    /// Chunks whose keyed hash falls below `threshold`: a fresh key each run, so each run
    /// reads another random part.
    Below {
        key: RandomState,
        threshold: u64,
    },
}

impl Selection {
    /// `subset` for a run over chunks whose distinct content adds up to `total_bytes` (what a
    /// `SIZE` is a share of).
    pub fn new(subset: Subset, total_bytes: u64) -> Self {
        let fraction = match subset {
            Subset::Group { n, t } => {
                return Selection {
                    rule: Rule::Group { n, t },
                }
            }
            Subset::Percent(p) => p / 100.0,
            Subset::Size(bytes) if total_bytes == 0 => f64::from(u8::from(bytes > 0)),
            Subset::Size(bytes) => (bytes as f64 / total_bytes as f64).min(1.0),
        };
        let threshold = if fraction >= 1.0 {
            u64::MAX
        } else {
            (fraction * u64::MAX as f64) as u64
        };
        Selection {
            rule: Rule::Below {
                key: RandomState::new(),
                threshold,
            },
        }
    }

    /// Whether this run reads chunk `id`.
    pub fn reads(&self, id: &ChunkId) -> bool {
        let first = u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]]);
        self.picks(first, id.0)
    }

    /// Whether this run reads the chunks of pack `pack` (its id: random hex digits), for a
    /// reader of a store of packs that reads a pack's chunks together.
    pub fn reads_pack(&self, pack: &str) -> bool {
        let first = pack
            .get(..8)
            .and_then(|head| u32::from_str_radix(head, 16).ok())
            .unwrap_or(0);
        self.picks(first, pack)
    }

    /// Whether the item whose id begins with `first` (a random number) and is `whole` is read.
    fn picks(&self, first: u32, whole: impl std::hash::Hash) -> bool {
        match &self.rule {
            Rule::Group { n, t } => first % t == n - 1,
            Rule::Below { key, threshold } => {
                *threshold == u64::MAX || key.hash_one(whole) < *threshold
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(count: u32) -> Vec<ChunkId> {
        (0..count).map(|i| ChunkId::of(&i.to_le_bytes())).collect()
    }

    #[test]
    fn subsets_parse_as_restic_writes_them() {
        assert_eq!("2/7".parse(), Ok(Subset::Group { n: 2, t: 7 }));
        assert_eq!("10%".parse(), Ok(Subset::Percent(10.0)));
        assert_eq!("2.5%".parse(), Ok(Subset::Percent(2.5)));
        assert_eq!("500M".parse(), Ok(Subset::Size(500 << 20)));
        assert_eq!("1g".parse(), Ok(Subset::Size(1 << 30)));
        assert_eq!("4096".parse(), Ok(Subset::Size(4096)));
        for bad in [
            "0/7", "8/7", "1/0", "a/b", "0%", "101%", "x%", "0", "5Q", "", "-1/2",
        ] {
            let err = bad.parse::<Subset>().unwrap_err();
            assert!(err.contains("is not a subset"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_groups_of_a_cycle_read_every_chunk_exactly_once() {
        let ids = ids(5000);
        let groups: Vec<Selection> = (1..=7)
            .map(|n| Selection::new(Subset::Group { n, t: 7 }, 0))
            .collect();
        for id in &ids {
            let readers = groups.iter().filter(|g| g.reads(id)).count();
            assert_eq!(readers, 1, "{id}");
        }
        // Each group reads about a seventh.
        for group in &groups {
            let read = ids.iter().filter(|id| group.reads(id)).count();
            assert!((550..=880).contains(&read), "{read}");
        }
    }

    #[test]
    fn the_groups_of_a_cycle_read_every_pack_exactly_once() {
        let packs: Vec<String> = ids(700)
            .iter()
            .map(|id| id.to_string()[..32].to_string())
            .collect();
        let groups: Vec<Selection> = (1..=7)
            .map(|n| Selection::new(Subset::Group { n, t: 7 }, 0))
            .collect();
        for pack in &packs {
            assert_eq!(groups.iter().filter(|g| g.reads_pack(pack)).count(), 1);
        }
        for group in &groups {
            let read = packs.iter().filter(|p| group.reads_pack(p)).count();
            assert!((60..=140).contains(&read), "{read}");
        }
    }

    #[test]
    fn a_fraction_reads_about_that_share_and_another_part_each_run() {
        let ids = ids(20_000);
        let first = Selection::new(Subset::Percent(25.0), 0);
        let read: Vec<&ChunkId> = ids.iter().filter(|id| first.reads(id)).collect();
        assert!((4500..=5500).contains(&read.len()), "{}", read.len());
        let second = Selection::new(Subset::Percent(25.0), 0);
        let again = read.iter().filter(|id| second.reads(id)).count();
        assert!(again < read.len() / 2, "{again} of {}", read.len());
        let all = Selection::new(Subset::Percent(100.0), 0);
        assert!(ids.iter().all(|id| all.reads(id)));
    }

    #[test]
    fn a_size_is_a_share_of_the_total() {
        let ids = ids(20_000);
        let half = Selection::new(Subset::Size(50), 100);
        let read = ids.iter().filter(|id| half.reads(id)).count();
        assert!((9000..=11_000).contains(&read), "{read}");
        let more_than_all = Selection::new(Subset::Size(500), 100);
        assert!(ids.iter().all(|id| more_than_all.reads(id)));
    }
}
