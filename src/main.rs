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
        Command::Doctor(args) => sandbox::doctor::run(args),
        Command::Completions { shell } => {
            // Rendered in memory: the generator panics on a write error
            // (a reader that went away).
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "sandbox", &mut text);
            sandbox::out::stdout_bytes(&text);
            Ok(())
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .section("8")
                .render(&mut text)
                .map_err(|e| sandbox::Error::io("render man page", "stdout", e))
                .map(|()| sandbox::out::stdout_bytes(&text))
        }
    };
    // A write to standard output that failed (not a closed pipe) fails a
    // command that otherwise succeeded: its output is incomplete.
    let result = result.and_then(|()| match sandbox::out::take_error() {
        Some(e) => Err(sandbox::Error::io("write", "standard output", e)),
        None => Ok(()),
    });
    if let Err(e) = result {
        sandbox::errln!("sandbox: {e}");
        std::process::exit(e.exit_code());
    }
}
