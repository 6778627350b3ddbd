//! Compiles `proto/*.proto` (Mesos' v1 scheduler messages) into a file
//! descriptor set the master reads and writes protobuf bodies with.

fn main() {
    println!("cargo:rerun-if-changed=proto");
    let mut compiler =
        protox::Compiler::new(["proto"]).unwrap_or_else(|e| panic!("cannot read proto/: {e}"));
    compiler.include_imports(true);
    compiler
        .open_file("scheduler.proto")
        .unwrap_or_else(|e| panic!("cannot compile proto/scheduler.proto: {e}"));
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR is set"));
    std::fs::write(
        out.join("mesos_v1.bin"),
        compiler.encode_file_descriptor_set(),
    )
    .expect("write the descriptor set");
}
