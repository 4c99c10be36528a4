//! The `ociregistry` binary: a thin shell over the library's CLI.

fn main() -> std::process::ExitCode {
    match ociregistry::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ociregistry: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
