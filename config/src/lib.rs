//! flowgate-config: the flows language and the appliance config.
//!
//! - [`flows`]: the flows language (syntax tree, parser, printer, reference interpreter).
//! - [`source`]: reading config and flows files (regular files only, bounded).
#![deny(unsafe_code)]

pub mod appliance;
pub mod flows;
pub mod source;
