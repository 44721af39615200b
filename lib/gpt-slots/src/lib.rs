//! GPT slot attributes (priority, tries, successful), slot choice and crash-safe table updates; no_std
