//! One server process: `harness serve`, a style of this workspace or a guest.
//!
//! - [`limits`]: the policy layer's limits as flags of `serve` and `run`.
//! - [`style`]: a style's own knobs (`--io-threads`, `--stack-kib`, `--driver`) as flags.
//! - [`guest`]: servers from other ecosystems: setup, stamps, and `exec` of their command.
//! - [`impls`]: the implementations the harness can run (built-in styles and guests) and the
//!   dispatch of a listener to a style.
//! - [`serve`]: `harness serve`: a listener, a service, a style, signals and counters.

pub mod guest;
pub mod impls;
pub mod limits;
pub mod serve;
pub mod style;
