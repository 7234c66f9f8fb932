//! Lists `migrations/*.sql` for `db::migrate` at build time, sorted by name,
//! so that a new migration is a new file and nothing else.
//!
//! A build script rather than the `include_dir` crate: its macro does not
//! tell cargo to rebuild when a file is added to the directory, while
//! `rerun-if-changed` on a directory makes cargo rescan it on every build.

use std::fmt::Write as _;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
            entry.file_name().to_string_lossy().into_owned()
        })
        .filter_map(|file| file.strip_suffix(".sql").map(str::to_string))
        .collect();
    names.sort();
    let mut list = String::from("&[\n");
    for name in &names {
        // Applied in name order: a number that sorts as text keeps it the
        // order they were written in.
        let numbered = name.len() > 5
            && name.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && name.as_bytes()[4] == b'_';
        assert!(
            numbered,
            "migrations/{name}.sql: a migration's name starts with its four-digit number and \
             an underscore, e.g. 0006_{name}.sql"
        );
        let path = dir.join(format!("{name}.sql"));
        let path = path.to_str().expect("the migrations directory is UTF-8");
        writeln!(list, "    ({name:?}, include_str!({path:?})),").expect("writing to a String");
    }
    list.push(']');
    let out =
        Path::new(&std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("migrations.rs");
    std::fs::write(&out, list).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}
