//! The flows language: syntax tree, reference interpreter, packets.

pub mod ast;
pub mod decide;
pub mod diag;
pub mod lexer;
pub mod packet;
pub mod parser;

pub use ast::*;
pub use decide::{decide, holds, Action, Decision};
pub use diag::{render, Diagnostic, Severity, Span};
pub use packet::{Packet, L4};
pub use parser::{parse, parse_with, Parsed, Spans};

/// What an appliance config defines, for checking the references of a flows file
/// (`iface`, `director`, `table`). Without a config, nothing is checked.
pub trait Names {
    fn has_port(&self, name: &str) -> bool;
    fn has_director(&self, name: &str) -> bool;
    fn has_table(&self, id: u32) -> bool;
}
