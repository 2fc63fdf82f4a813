fn main() {
    std::process::exit(resetlab::cli::main());
}
