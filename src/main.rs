use clap::{CommandFactory, Parser};

use sandbox::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Setup(args) if args.boot => sandbox::boot::run(args),
        Command::Setup(args) => sandbox::run::setup(args),
        Command::Plan(args) => sandbox::run::plan(args),
        Command::Status(args) => sandbox::run::status(args),
        Command::Log(args) => sandbox::run::log(args),
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "sandbox", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout())
            .map_err(|e| sandbox::Error::io("write man page", "stdout", e)),
    };
    if let Err(e) = result {
        eprintln!("sandbox: {e}");
        std::process::exit(e.exit_code());
    }
}
