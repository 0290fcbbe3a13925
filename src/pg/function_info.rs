//! Declarations for hand-written SQL-callable C functions (`PG_FUNCTION_INFO_V1`, for
//! trigger and event-trigger functions that `#[pg_extern]` cannot express) and the
//! `sql_query!` macro that reads a query from `sql/queries/` as a C string.

/// The record PostgreSQL reads from `pg_finfo_<name>`: version-1 calling convention.
pub const V1: pgrx::pg_sys::Pg_finfo_record = pgrx::pg_sys::Pg_finfo_record { api_version: 1 };

/// Declares `pg_finfo_<name>` functions (give their full names) for the V1 functions of
/// the same `<name>`.
#[macro_export]
macro_rules! function_info_v1 {
    ($($finfo:ident),+ $(,)?) => {
        $(
            #[unsafe(no_mangle)]
            pub extern "C" fn $finfo() -> &'static pgrx::pg_sys::Pg_finfo_record {
                &$crate::pg::function_info::V1
            }
        )+
    };
}

/// A query from `sql/queries/<file>` as a `&'static CStr`, for raw SPI calls.
#[macro_export]
macro_rules! sql_query {
    ($file:literal) => {
        match ::std::ffi::CStr::from_bytes_with_nul(
            concat!(
                include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/sql/queries/", $file)),
                "\0"
            )
            .as_bytes(),
        ) {
            Ok(query) => query,
            Err(_) => panic!("a query file must not contain NUL bytes"),
        }
    };
}
