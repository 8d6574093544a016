//! Everything behind `cargo xtask`: building the function artifact, synthesising the
//! CloudFormation template, deploying and tearing down stacks, and running the stack locally.

pub mod local;
pub mod project;
