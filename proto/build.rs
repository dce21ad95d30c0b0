//! Generates the tonic code for `tether/v1/*.proto` with protox, so no system `protoc` is needed.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let protos: Vec<PathBuf> = std::fs::read_dir(root.join("tether/v1"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "proto"))
        .collect();
    // The directory too, so that adding a new .proto regenerates the code.
    println!("cargo:rerun-if-changed=tether/v1");
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let fds = protox::compile(&protos, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("tether_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // `build_transport(false)`: the rpc is named `Connect`, which would clash with the generated
    // `Client::connect(endpoint)` helper; clients build a `Channel` themselves and call `new`.
    // `codec_path`: a message that does not decode is the sender's bad input (INVALID_ARGUMENT, as
    // admin.proto promises), not INTERNAL as tonic-prost's codec says.
    tonic_prost_build::configure()
        .build_transport(false)
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(fds)?;
    Ok(())
}
