//! The `lethe` binary: a thin layer over the library. Parsed arguments (clap) are turned into
//! library calls; results are printed here and nowhere else; errors become stable exit codes.

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(cli::main());
}
