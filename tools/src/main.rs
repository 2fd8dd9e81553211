//! The `decree` command line.
fn main() {
    println!("decree");
}
