//! flowgate-config: the flows language and the appliance config.
//!
//! - [`flows`]: the flows language (syntax tree, parser, printer, reference interpreter).
#![deny(unsafe_code)]

pub mod appliance;
pub mod flows;
