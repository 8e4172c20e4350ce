pub mod binary;
pub mod hub;
pub mod rpc;
pub mod service;
pub mod terminal;
pub mod tmpfs;
pub mod upstream;
pub mod wait;
