//! Compiles `schemas/proto` with protox (no protoc needed): the descriptor set the server reads
//! its routes from (and serves by reflection), and the Rust client that tests and Rust callers
//! use.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas/proto");
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files([root.join("tally/v1/tally.proto"), root.join("tally/v1/options.proto")])?;
    // Encoded by protox itself: prost's own descriptor types would drop the custom options.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tally.v1.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure().build_server(false).compile_fds(compiler.file_descriptor_set())?;
    // Relative, so that it names this checkout's files wherever the target directory is.
    println!("cargo:rerun-if-changed=../../schemas/proto");
    println!("cargo:rerun-if-changed=build.rs");
    Ok(())
}
