//! The flows language: syntax tree, reference interpreter, packets.

pub mod ast;
pub mod decide;
pub mod packet;

pub use ast::*;
pub use decide::{decide, holds, Action, Decision};
pub use packet::{Packet, L4};

/// What an appliance config defines, for checking the references of a flows file
/// (`iface`, `director`, `table`). Without a config, nothing is checked.
pub trait Names {
    fn has_port(&self, name: &str) -> bool;
    fn has_director(&self, name: &str) -> bool;
    fn has_table(&self, id: u32) -> bool;
}
