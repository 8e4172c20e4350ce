#![allow(dead_code)]

pub mod binary;
pub mod service;
pub mod upstream;
