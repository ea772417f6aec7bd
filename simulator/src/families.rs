//! Families of traces (`--every-family DIR`): traffic of one shape drawn many times, the
//! way `held-out/traces.py --write` lays it out. Each folder of DIR is a family, named
//! by the folder; each file in it one trace of that family (as `--trace` reads it),
//! named by the seed whose draws (service times, start-ups) it runs on: `7.txt` runs on
//! seed 7's, as a scenario's seed 7 does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::trace;

/// One family's traces, by seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub traces: BTreeMap<u64, Vec<f64>>,
}

/// Every family in `directory`, in the order of their names.
pub fn read(directory: &Path) -> Result<Vec<Family>, Error> {
    let mut families = Vec::new();
    for path in entries(directory)? {
        let Some(name) = visible_name(&path) else { continue };
        if !path.is_dir() {
            return Err(Error::NotAFamily { path });
        }
        let mut traces = BTreeMap::new();
        for file in entries(&path)? {
            if visible_name(&file).is_none() {
                continue;
            }
            let seed = seed_of(&file).ok_or_else(|| Error::TraceNotNamedBySeed { path: file.clone() })?;
            let arrivals = trace::read_file(&file)?;
            if traces.insert(seed, arrivals).is_some() {
                return Err(Error::SeedTracedTwice { family: path.clone(), seed });
            }
        }
        if traces.is_empty() {
            return Err(Error::EmptyFamily { path });
        }
        families.push(Family { name, traces });
    }
    if families.is_empty() {
        return Err(Error::NoFamilies { path: directory.to_path_buf() });
    }
    Ok(families)
}

/// The entries of `directory`, sorted by name.
fn entries(directory: &Path) -> Result<Vec<PathBuf>, Error> {
    let unreadable = |source| Error::ReadFamilies { path: directory.to_path_buf(), source };
    let mut paths = std::fs::read_dir(directory)
        .map_err(unreadable)?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(unreadable)?;
    paths.sort();
    Ok(paths)
}

/// The name of an entry not hidden (an editor's swap file, `.DS_Store`), if it has one.
fn visible_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (!name.starts_with('.')).then(|| name.to_string())
}

/// The seed a trace file's name gives: `7` or `7.txt`.
fn seed_of(path: &Path) -> Option<u64> {
    path.file_stem()?.to_str()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh folder under the system's temporary one, removed when dropped.
    struct Folder(PathBuf);

    impl Folder {
        fn new(name: &str) -> Self {
            let path = std::env::temp_dir().join(format!("matte-sim-families-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("a temporary folder");
            Self(path)
        }

        fn write(&self, relative: &str, text: &str) {
            let path = self.0.join(relative);
            std::fs::create_dir_all(path.parent().expect("a parent")).expect("a family's folder");
            std::fs::write(path, text).expect("a trace");
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn reads_each_folder_as_a_family_and_each_file_as_the_trace_of_its_seed() {
        let folder = Folder::new("valid");
        folder.write("storms/10.txt", "# storms, seed 10\n5\n1\n");
        folder.write("storms/9.txt", "2\n");
        folder.write("storms/.9.txt.swp", "not a trace");
        folder.write("pairs/1", "0\n");
        folder.write(".hidden/1.txt", "0\n");
        let families = read(&folder.0).expect("two families");
        let names: Vec<&str> = families.iter().map(|family| family.name.as_str()).collect();
        assert_eq!(names, ["pairs", "storms"]);
        assert_eq!(families[1].traces, BTreeMap::from([(9, vec![2.0]), (10, vec![1.0, 5.0])]));
        assert_eq!(families[0].traces, BTreeMap::from([(1, vec![0.0])]));
    }

    #[test]
    fn a_trace_not_named_by_a_seed_or_a_seed_traced_twice_is_refused_naming_it() {
        let folder = Folder::new("unnamed");
        folder.write("storms/monday.txt", "0\n");
        let error = read(&folder.0).expect_err("no seed");
        assert!(
            matches!(&error, Error::TraceNotNamedBySeed { path } if path.ends_with("storms/monday.txt")),
            "{error}"
        );
        let folder = Folder::new("twice");
        folder.write("storms/3.txt", "0\n");
        folder.write("storms/3.csv", "1\n");
        let error = read(&folder.0).expect_err("seed 3 twice");
        assert!(matches!(error, Error::SeedTracedTwice { seed: 3, .. }), "{error}");
    }

    #[test]
    fn a_folder_without_families_a_family_without_traces_or_a_stray_file_is_refused() {
        let folder = Folder::new("empty");
        assert!(matches!(read(&folder.0), Err(Error::NoFamilies { .. })));
        std::fs::create_dir_all(folder.0.join("storms")).expect("a family's folder");
        assert!(matches!(read(&folder.0), Err(Error::EmptyFamily { .. })));
        let folder = Folder::new("stray");
        folder.write("1.txt", "0\n");
        assert!(matches!(read(&folder.0), Err(Error::NotAFamily { .. })));
        let error = read(&folder.0.join("missing")).expect_err("no such folder");
        assert!(matches!(error, Error::ReadFamilies { .. }), "{error}");
        folder.write("storms/1.txt", "soon\n");
        std::fs::remove_file(folder.0.join("1.txt")).expect("removed");
        assert!(matches!(read(&folder.0), Err(Error::BadArrival { .. })), "a bad trace is named as with --trace");
    }
}
