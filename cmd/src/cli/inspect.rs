//! `rctr inspect IMAGE`.

use anyhow::Result;
use clap::Args;
use rctr_image::InspectItem;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Image: .sif, squashfs file or directory, of any architecture
    pub image: PathBuf,
    /// Show the labels (the default when nothing else is asked for)
    #[arg(short, long)]
    pub labels: bool,
    /// Show the runscript
    #[arg(short, long)]
    pub runscript: bool,
    /// Show the startscript (what `instance start` runs)
    #[arg(short, long)]
    pub startscript: bool,
    /// Show the environment scripts
    #[arg(short, long)]
    pub environment: bool,
    /// Show the definition file the image was built from
    #[arg(short, long)]
    pub deffile: bool,
    /// Print JSON, in Apptainer's `inspect --json` layout
    #[arg(short, long)]
    pub json: bool,
}

pub fn run(args: InspectArgs) -> Result<i32> {
    let mut items = Vec::new();
    for (wanted, item) in [
        (args.labels, InspectItem::Labels),
        (args.deffile, InspectItem::Deffile),
        (args.runscript, InspectItem::Runscript),
        (args.startscript, InspectItem::Startscript),
        (args.environment, InspectItem::Environment),
    ] {
        if wanted {
            items.push(item);
        }
    }
    let metadata = rctr_image::inspect(&args.image, &items)?;
    if args.json {
        println!("{}", metadata.to_json());
    } else {
        print!("{}", metadata.to_text());
    }
    Ok(0)
}
