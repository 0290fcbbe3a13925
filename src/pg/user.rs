//! Running a step as another role (the owner of the extension's tables), restored on
//! every exit.
//!
//! # Invariants
//! - [`AsUser`] saves the current user id and security context and restores them on
//!   drop, which also runs while an ERROR raised inside a pgrx-guarded call unwinds;
//!   PostgreSQL's (sub)transaction abort restores them as well if a raw longjmp skips it.
//! - The switch adds `SECURITY_LOCAL_USERID_CHANGE`, as SECURITY DEFINER functions do, so
//!   `SET ROLE` inside the step is refused.

use pgrx::pg_sys;

#[must_use = "the role switch ends when the guard is dropped"]
pub struct AsUser {
    saved_user: pg_sys::Oid,
    saved_context: i32,
}

impl AsUser {
    pub fn switch_to(role: pg_sys::Oid) -> AsUser {
        let mut saved_user = pg_sys::InvalidOid;
        let mut saved_context = 0;
        // SAFETY: the standard save/switch of the current user (see module docs).
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut saved_user, &mut saved_context);
            pg_sys::SetUserIdAndSecContext(
                role,
                saved_context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        AsUser {
            saved_user,
            saved_context,
        }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        // SAFETY: restores exactly what `switch_to` saved.
        unsafe { pg_sys::SetUserIdAndSecContext(self.saved_user, self.saved_context) };
    }
}
