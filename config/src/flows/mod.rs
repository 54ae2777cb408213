//! The flows language: syntax tree, reference interpreter, packets.
//!
//! Front end: [`lexer`] (words and comments) -> [`parser`] (tree + [`Spans`], errors with
//! recovery) -> [`lint`] (warnings); [`load()`] ties them together for the CLIs, [`diag`]
//! renders diagnostics, [`print()`] writes the canonical form back.

pub mod ast;
pub mod decide;
pub mod diag;
pub mod lexer;
pub mod lint;
pub mod load;
pub mod packet;
pub mod parser;
pub mod print;

pub use ast::*;
pub use decide::{decide, holds, Action, Decision};
pub use diag::{render, Diagnostic, Severity, Span};
pub use load::{load, load_file, LoadError, Loaded, Report};
pub use packet::{parse_packet_line, Packet, L4};
pub use parser::{parse, parse_with, Parsed, Spans};
pub use print::print;

/// What an appliance config defines, for checking the references of a flows file
/// (`iface`, `director`, `table`). Without a config, nothing is checked.
pub trait Names {
    fn has_port(&self, name: &str) -> bool;
    fn has_director(&self, name: &str) -> bool;
    fn has_table(&self, id: u32) -> bool;
}
