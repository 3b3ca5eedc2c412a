//! Builds one mutant's ext4.ko by hand:
//! `cargo run -p e4race-mutant --example build-mutant -- MUTANT SERIES [KERNEL_RELEASE]`
//! e.g. `... -- migrate-flag-clear 6.12`. Prints the module's path.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(name), Some(series)) = (args.first(), args.get(1)) else {
        eprintln!("usage: build-mutant MUTANT SERIES [KERNEL_RELEASE]");
        return ExitCode::from(2);
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../vm-images/mutants");
    let result = (|| -> Result<std::path::PathBuf, Box<dyn std::error::Error>> {
        let m = mutant::Mutant::find(&root, name)?;
        let release = match args.get(2) {
            Some(r) => r.clone(),
            None => mutant::newest_kernel_release(series, &mutant::default_archive())?,
        };
        let req = mutant::BuildRequest::new(
            release,
            series.as_str(),
            m.patch_for(series)?,
            mutant::default_cache_dir(),
        );
        Ok(mutant::build_ext4_module(&req, &|s: &str| {
            eprintln!("{s}")
        })?)
    })();
    match result {
        Ok(p) => {
            println!("{}", p.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
