//! The OpenAPI 3.1 document served at `/v1/openapi.json`: generated from
//! the handlers' `#[utoipa::path]` attributes (collected as the router is
//! built, `api::router`) and the `tally-api` bodies, so it cannot drift
//! from the code. This file holds only what no handler says: the title,
//! the description, the bearer scheme.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The document's frame; the paths are added by `api::router`.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Tally host API",
        description = "Upload signed packages, run them in the deterministic sandbox, fetch receipts, transcripts and recorded outputs, verify receipts by replay.\n\nEvery error body is an `ErrorBody` with a stable `code`. Every request with a body must send its Content-Length (411 otherwise). A server on a loopback address answers 421 to requests whose `Host` is not a loopback name. Connections that take longer than the header timeout to send their headers, or stall a body longer than the body timeout, are closed.",
    ),
    components(schemas(tally_api::ErrorBody, tally_api::ErrorDetail)),
    modifiers(&Bearer),
    tags(
        (name = "packages", description = "Signed, content-addressed packages."),
        (name = "runs", description = "Sandboxed, metered, deterministic runs that end in a sealed receipt."),
        (name = "receipts", description = "Receipts, their transcripts and recorded outputs, and replays."),
        (name = "service", description = "Liveness and metrics."),
    )
)]
pub(crate) struct ApiDoc;

/// The `bearer` scheme runs and verifications name.
struct Bearer;

impl utoipa::Modify for Bearer {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}
