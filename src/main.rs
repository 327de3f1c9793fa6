use clap::Parser;

use sandbox::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Setup(args) => sandbox::run::setup(args),
    };
    if let Err(e) = result {
        eprintln!("sandbox: {e}");
        std::process::exit(e.exit_code());
    }
}
