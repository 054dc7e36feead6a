//! The catalog sync's shells: the source plug-ins ([`sources`]) and the sync itself, by hand
//! or on schedule ([`sync`]). What a sync means is the pure [`crate::sansio::catalog_plan`].

pub mod sources;
pub mod sync;
