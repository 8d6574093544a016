//! The deploy core: stack settings, the CloudFormation template, the function artifact, the
//! target a command acts on, the stack's lifecycle, reading DynamoDB Streams, replaying the
//! failure queue and checking the mirror. It knows nothing about emulators or benchmarks.

pub mod artifact;
pub mod console;
pub mod errors;
pub mod mirror_check;
pub mod project;
pub mod reconcile;
pub mod replay;
pub mod settings;
pub mod stack;
pub mod streams;
pub mod target;
pub mod template;
pub mod workflow;
