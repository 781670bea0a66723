//! Links PMDK's libpmemlog when the `pmdk` feature is on (the `--baseline pmemlog` peer of
//! `pstream bench append`); without the feature nothing is linked, so the package builds on
//! a machine without libpmemlog-dev.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_PMDK").is_some() {
        println!("cargo::rustc-link-lib=dylib=pmemlog");
    }
}
