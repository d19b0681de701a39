//! `lethe schema`: the JSON Schema of the pipeline and dataset-schema formats, for editors and CI.

use lethe::error::{Error, exit};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Which format: pipeline, dataset, or both (default).
    #[arg(long, value_parser = ["pipeline", "dataset", "both"], default_value = "both")]
    kind: String,
}

pub fn exec(a: Args) -> Result<i32, Error> {
    let all = lethe::spec::json_schemas();
    let v = match a.kind.as_str() {
        "pipeline" => all["pipeline"].clone(),
        "dataset" => all["dataset"].clone(),
        _ => all,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&v).map_err(|e| Error::internal(e.to_string()))?
    );
    Ok(exit::OK)
}
