//! `crds/` and the chart's `crds/` are what `matte-operator crd` prints: regenerate both with
//! `cargo run -p matte-operator -- crd | tee crds/backgroundremovalservices.matte.dev.yaml > charts/matte/crds/backgroundremovalservices.matte.dev.yaml`.

use matte_operator::crd::crd_yaml;

fn assert_current(relative: &str) {
    let path = format!("{}/../{relative}", env!("CARGO_MANIFEST_DIR"));
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{relative}: {e}"));
    assert!(checked_in == crd_yaml(), "{relative} is stale: run `cargo run -p matte-operator -- crd > {relative}`");
}

#[test]
fn the_checked_in_crd_is_current() {
    assert_current("crds/backgroundremovalservices.matte.dev.yaml");
}

#[test]
fn the_charts_crd_is_current() {
    assert_current("charts/matte/crds/backgroundremovalservices.matte.dev.yaml");
}
