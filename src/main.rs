fn main() {
    let cli = sandbox::cli::parse();
    std::process::exit(sandbox::run::main(&cli));
}
