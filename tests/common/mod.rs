#![allow(dead_code)]

pub mod binary;
pub mod hub;
pub mod service;
pub mod tmpfs;
pub mod upstream;
