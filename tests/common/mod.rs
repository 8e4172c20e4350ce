#![allow(dead_code)]

pub mod service;
pub mod upstream;
