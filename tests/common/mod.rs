#![allow(dead_code)]

pub mod binary;
pub mod hub;
pub mod service;
pub mod terminal;
pub mod tmpfs;
pub mod upstream;
