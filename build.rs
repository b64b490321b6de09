//! Rebuilds when a migration changes: `embed_migrations!` reads `migrations/` at compile time,
//! and cargo does not otherwise know those files belong to the build.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
