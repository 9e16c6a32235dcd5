//! The on-disk format of a backup, in one place: the manifest (`manifest`), the directory's
//! shape and names (`layout`), the rules for names a backup carries (`names`), version
//! compatibility (`compat`) and the migrations between versions (`migrations`).

pub(crate) mod compat;
pub mod layout;
pub mod manifest;
pub(crate) mod migrations;
pub(crate) mod names;
