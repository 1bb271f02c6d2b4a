//! End-to-end specifications of nix-attach. Every build goes through the
//! real nix-daemon into a real sandbox, and terminals are real PTYs.
//! `tests/bed/setup` prepares the machine; `tests/run` runs it all.

mod support;

mod attach;
mod broker;
mod capture;
mod discovery;
mod docs;
mod elsewhere;
mod ending;
mod errors;
mod faults;
mod framed;
mod hook;
mod hostile;
mod injection;
mod inside;
mod msrv;
mod on_failure;
mod overlay;
mod remote;
mod retry;
mod sabotage;
mod state;
mod tools;
mod untouched;
mod wrapper;
