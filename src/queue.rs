//! The queue's data and decisions (what `actors` carry out). `lifecycle` decides every
//! transition, `line` keeps the records and their order, `store` persists them,
//! `model` holds the contract's types, `progress` the live numbers.

pub mod lifecycle;
pub mod line;
pub mod model;
pub mod progress;
pub mod store;
