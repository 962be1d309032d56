from fedgan.demo import same_epochs

CURVE = [{"step": 126, "kid": 40.0}, {"step": 252, "kid": 12.0}, {"step": 378, "kid": 8.0}, {"step": 504, "kid": 5.0}]


def test_equal_budget_compares_the_federation_with_centralised_training_at_the_same_epoch() -> None:
    line = same_epochs(CURVE, steps_per_epoch=21, federated_epochs=18, federated_kid=9.0)
    assert "had KID 8:" in line and "equal epochs 1.12" in line and "nearest" not in line


def test_equal_budget_falls_back_to_the_evaluation_before_and_says_so() -> None:
    line = same_epochs(CURVE, steps_per_epoch=21, federated_epochs=16, federated_kid=6.0)
    assert "had KID 12" in line and "nearest evaluation before: epoch 12" in line and "0.50" in line
    assert "not evaluated" in same_epochs(CURVE, steps_per_epoch=21, federated_epochs=3, federated_kid=6.0)
