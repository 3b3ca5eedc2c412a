//! The run report is the `e4race-report` crate's; this module only names it for the harness.

pub use e4race_report::{
    DefragExercise, Exercise, Finding, HostCheck, MigrateExercise, PowerCutExercise, Report,
    SmokeExercise, Verdict, WorkloadExercise, EXIT_CODES_HELP,
};
