//! Running a step as another role, restored on every exit.
//!
//! # Invariants
//! - [`SavedUser::switch_to`] saves the current user id and security context and
//!   switches, adding `SECURITY_LOCAL_USERID_CHANGE` as SECURITY DEFINER functions do (so
//!   `SET ROLE` inside the step is refused). It is `Copy` and restores only when asked:
//!   for frames that PostgreSQL ERRORs may longjmp through, where PostgreSQL's
//!   (sub)transaction abort restores the user instead.
//! - [`AsUser`] is the same switch as a guard that restores on drop, which also runs
//!   while an ERROR raised inside a pgrx-guarded call unwinds.

use pgrx::pg_sys;

/// A user and security context saved by a switch.
#[derive(Clone, Copy)]
#[must_use = "the saved user must be restored"]
pub struct SavedUser {
    user: pg_sys::Oid,
    context: i32,
}

impl SavedUser {
    /// Saves the current user and switches to `role`.
    pub fn switch_to(role: pg_sys::Oid) -> SavedUser {
        let mut user = pg_sys::InvalidOid;
        let mut context = 0;
        // SAFETY: the standard save/switch of the current user (see module docs).
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                role,
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32,
            );
        }
        SavedUser { user, context }
    }

    /// Restores what [`SavedUser::switch_to`] saved.
    pub fn restore(self) {
        // SAFETY: restores exactly the saved user and security context.
        unsafe { pg_sys::SetUserIdAndSecContext(self.user, self.context) };
    }
}

/// Runs as another role while it lives.
#[must_use = "the role switch ends when the guard is dropped"]
pub struct AsUser(SavedUser);

impl AsUser {
    pub fn switch_to(role: pg_sys::Oid) -> AsUser {
        AsUser(SavedUser::switch_to(role))
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        self.0.restore();
    }
}
