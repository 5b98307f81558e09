//! `rctr inspect IMAGE`.

use anyhow::Result;
use clap::Args;
use rctr_image::InspectItem;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    pub image: PathBuf,
    #[arg(short, long)]
    pub labels: bool,
    #[arg(short, long)]
    pub runscript: bool,
    #[arg(short, long)]
    pub startscript: bool,
    #[arg(short, long)]
    pub environment: bool,
    #[arg(short, long)]
    pub deffile: bool,
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
