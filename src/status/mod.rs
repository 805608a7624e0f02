//! `warmpool status`: one screen of what warmpool is doing in a cluster, read in ten seconds.
//!
//! [`collect`] lists the objects (a fixed number of calls, run concurrently, whatever the number
//! of tenants); [`build`] turns what was listed into a [`model::Status`] (pure); [`render`]
//! prints it as text or JSON (pure). A part that could not be read (a 403, say) is
//! [`Part::Unreadable`] with the permission that would show it, never a failure of the whole.

pub mod admission;
pub mod build;
pub mod collect;
pub mod model;
pub mod parts;
pub mod render;

use serde::Serialize;

/// The namespace annotations the reconciler writes once a new tenant is measured: `warm`,
/// `cold` or `not-ready`, and the seconds from its creation to every pod Ready.
pub use crate::core::tenant_ready::{
    READY_SECONDS as READY_SECONDS_ANNOTATION, START as START_ANNOTATION,
};

/// One part of the screen: what was read, or why it could not be.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Part<T> {
    Read(T),
    /// Forbidden: `needs` is the permission that would show it (`list pods (all namespaces)`).
    Unreadable {
        #[serde(rename = "notReadable")]
        needs: String,
    },
    /// Any other failure of the call, one line.
    Failed {
        error: String,
    },
}

impl<T> Part<T> {
    pub fn as_ref(&self) -> Part<&T> {
        match self {
            Part::Read(t) => Part::Read(t),
            Part::Unreadable { needs } => Part::Unreadable {
                needs: needs.clone(),
            },
            Part::Failed { error } => Part::Failed {
                error: error.clone(),
            },
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Part<U> {
        match self {
            Part::Read(t) => Part::Read(f(t)),
            Part::Unreadable { needs } => Part::Unreadable { needs },
            Part::Failed { error } => Part::Failed { error },
        }
    }

    pub fn ok(&self) -> Option<&T> {
        match self {
            Part::Read(t) => Some(t),
            _ => None,
        }
    }

    /// What was read, or why not as a part of another type (to return it early).
    fn read<U>(&self) -> Result<&T, Part<U>> {
        match self {
            Part::Read(t) => Ok(t),
            Part::Unreadable { needs } => Err(Part::Unreadable {
                needs: needs.clone(),
            }),
            Part::Failed { error } => Err(Part::Failed {
                error: error.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
