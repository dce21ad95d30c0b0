//! The `tether.v1` gRPC contract shared by tether-sidecar, tether-scheduler and tetherctl.
//!
//! This crate owns the generated code and the encoded file descriptor set (for server reflection), plus
//! two hand-written modules: [`client`], how a client dials the scheduler (endpoint, TLS rule, bearer
//! header), and [`limits`], what every scheduler accepts from a sidecar. The `.proto` files under `tether/v1/` are the source of truth and document every field.

pub mod client;
pub mod codec;
pub mod limits;

/// Package `tether.v1`.
pub mod v1 {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("tether.v1");
}

/// Encoded `FileDescriptorSet` of every `tether.v1` proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tether_descriptor.bin"));
