//! Everything behind `cargo xtask`: building the function artifact, synthesising the
//! CloudFormation template, deploying and tearing down stacks, and running the stack locally.

pub mod artifact;
pub mod bench;
pub mod console;
pub mod dev;
pub mod fuzz;
pub mod local;
pub mod mirror_check;
pub mod project;
pub mod replay;
pub mod settings;
pub mod stack;
pub mod target;
pub mod template;
pub mod tools;
pub mod workflow;
