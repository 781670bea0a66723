//! Placeholder until the tiering bench lands (owned by the tiering work).
fn main() {}
