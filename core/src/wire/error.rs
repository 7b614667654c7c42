//! `httperrors.HTTPErrorResponse`: the error body of every metal-api operation.

use serde::{Deserialize, Serialize};

/// `{"statuscode": 409, "message": "Conflict ..."}`.
///
/// Both fields are required on purpose: only a body that really is an error object decodes
/// as one; anything else (the bare JSON string of the tenant check, a proxy's HTML page) is
/// kept raw by the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpErrorResponse {
    pub statuscode: i32,
    pub message: String,
}

impl HttpErrorResponse {
    pub fn new(statuscode: u16, message: impl Into<String>) -> Self {
        HttpErrorResponse { statuscode: i32::from(statuscode), message: message.into() }
    }
}
