//! The measurements behind the `pstream` command line tool: the persist ceiling
//! ([`ceiling`]) and the load generators with their peers ([`bench`](mod@bench)). The criterion
//! benches of this crate use them too.
#![deny(unsafe_code)]

pub mod bench;
pub mod ceiling;
pub mod interrupt;
