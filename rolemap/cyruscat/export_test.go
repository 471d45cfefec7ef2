package cyruscat

// DirectRecords exposes directRecords to the tests.
var DirectRecords = directRecords
