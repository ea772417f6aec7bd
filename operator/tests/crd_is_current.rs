//! `crds/` is what `matte-operator crd` prints: regenerate it with
//! `cargo run -p matte-operator -- crd > crds/backgroundremovalservices.matte.dev.yaml`.

use matte_operator::crd::crd_yaml;

#[test]
fn the_checked_in_crd_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/backgroundremovalservices.matte.dev.yaml");
    let checked_in = std::fs::read_to_string(path).expect("crds/backgroundremovalservices.matte.dev.yaml exists");
    assert!(
        checked_in == crd_yaml(),
        "crds/ is stale: run `cargo run -p matte-operator -- crd > crds/backgroundremovalservices.matte.dev.yaml`"
    );
}
